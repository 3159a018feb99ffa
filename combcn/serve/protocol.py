"""The wire format between the OpenFX plugin and ``combcn serve`` (documented in docs/OFX.md).

Every message, both ways, is a frame: ``b"CCN1"`` (magic; the digit is the protocol's major
version) + body length as little-endian uint32 + a UTF-8 JSON object. An ``inpaint`` request
carries one file descriptor (SCM_RIGHTS, on the header's bytes): shared memory holding

    frames      float32 [T, H, W, C]   plate, top-down rows, C = 3 or 4 (RGB[A])
    matte       float32 [T, H, W]      1 = remove, 0 = keep
    references  float32 [R, H, W, 3]   RGB of the frames listed in ``references`` with their hole
                                       filled by hand (R = 0 when the request names none)
    out         float32 [K, H, W, C]   written by the server: the frames listed in ``want``

packed in that order with no padding.

A ``lookup`` request asks, before the plugin fetches a whole window from its host, whether the
server still holds the fill of that window for these inputs (docs/OFX.md, "Window cache"): it
carries the same shared-memory layout for one frame (T = 1, ``want`` [0]), a ``slot`` (the plugin's
hash of everything but the pixels: instance, window span, clip range, size, parameters), the frame's
``time`` and ``frame_id`` (a hash of that frame's pixels and matte as sent). ``inpaint`` requests may
carry ``slot`` and ``frame_ids`` (one per frame, in window order, with ``times``) so the server can
answer later lookups.

``references`` (optional, ``inpaint`` only) lists the window indices of frames the artist filled by
hand; their RGB follows the matte and the engine carries it along the motion (``references=`` of
:meth:`combcn.engine.Engine.inpaint`). A server that predates them computes another ``out_offset``
and refuses the request.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

PROTOCOL_VERSION = 1
MAGIC = b"CCN1"
HEADER = struct.Struct("<4sI")
MAX_BODY = 1 << 20  # a request is metadata only; pixels travel in shared memory
MAX_FRAMES = 1024
MAX_SIDE = 32768
FLOAT_BYTES = 4


class ProtocolError(Exception):
    """A request that does not follow the protocol; the reply says what is wrong."""


@dataclass(frozen=True)
class WindowLayout:
    """Byte layout of one window in shared memory.

    Attributes:
        frames: T, frames in the window.
        height: H in pixels.
        width: W in pixels.
        channels: C, 3 (RGB) or 4 (RGBA; alpha is passed through).
        want: indices into the window of the frames the server writes back (K = len(want)).
        references: indices into the window of the frames that have a reference (R of them, in
            the order their RGB is stored).
    """

    frames: int
    height: int
    width: int
    channels: int
    want: tuple[int, ...]
    references: tuple[int, ...] = ()

    @property
    def plane(self) -> int:
        return self.height * self.width

    @property
    def frames_bytes(self) -> int:
        return self.frames * self.plane * self.channels * FLOAT_BYTES

    @property
    def matte_offset(self) -> int:
        return self.frames_bytes

    @property
    def references_offset(self) -> int:
        return self.frames_bytes + self.frames * self.plane * FLOAT_BYTES

    @property
    def out_offset(self) -> int:
        return self.references_offset + len(self.references) * self.plane * 3 * FLOAT_BYTES

    @property
    def total_bytes(self) -> int:
        return self.out_offset + len(self.want) * self.plane * self.channels * FLOAT_BYTES


def encode(message: dict[str, Any]) -> bytes:
    """One frame: header + compact JSON body."""
    body = json.dumps(message, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return HEADER.pack(MAGIC, len(body)) + body


def parse_header(header: bytes) -> int:
    """Body length from an 8-byte header; ProtocolError for a wrong magic or an oversized body."""
    magic, length = HEADER.unpack(header)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {magic!r}: expected {MAGIC!r} (protocol version {PROTOCOL_VERSION})")
    if length > MAX_BODY:
        raise ProtocolError(f"request body of {length} bytes is over the {MAX_BODY}-byte limit")
    return int(length)


def decode_body(body: bytes) -> dict[str, Any]:
    """The JSON object of a body; ProtocolError if it is not one or names another protocol version."""
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"request is not UTF-8 JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ProtocolError("request must be a JSON object")
    if message.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {message.get('v')!r} is not supported "
            f"(this server speaks {PROTOCOL_VERSION}); "
            "update the OpenFX plugin and combcn together"
        )
    return message


def _int(message: dict[str, Any], key: str, lo: int, hi: int) -> int:
    value = message.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ProtocolError(f"{key!r} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


@dataclass(frozen=True)
class WindowIds:
    """What identifies a window's inputs for lookups (docs/OFX.md, "Window cache").

    Attributes:
        slot: the client's hash of everything but the pixels (instance, span, range, size, params).
        ids: frame number -> the client's hash of that frame's pixels and matte as sent.
    """

    slot: str
    ids: dict[int, str]


def _hex(message: dict[str, Any], key: str) -> str:
    value = message.get(key)
    if not isinstance(value, str) or not 1 <= len(value) <= 64 or value.strip("0123456789abcdef"):
        raise ProtocolError(f"{key!r} must be a lower-case hex string of at most 64 digits, got {value!r}")
    return value


def window_ids_from_request(message: dict[str, Any], frames: int) -> WindowIds | None:
    """The optional ``slot``/``frame_ids``/``times`` of an ``inpaint`` request; None when absent."""
    if "slot" not in message:
        return None
    slot = _hex(message, "slot")
    times, ids = message.get("times"), message.get("frame_ids")
    if (
        not isinstance(times, list)
        or len(times) != frames
        or not all(isinstance(t, int) and not isinstance(t, bool) for t in times)
    ):
        raise ProtocolError(f"'times' must list the {frames} frame numbers of the window, got {times!r}")
    if not isinstance(ids, list) or len(ids) != frames:
        raise ProtocolError(f"'frame_ids' must hold one id per frame ({frames}), got {ids!r}")
    checked = [_hex({"frame_ids": i}, "frame_ids") for i in ids]
    return WindowIds(slot, dict(zip(times, checked, strict=True)))


def lookup_from_request(message: dict[str, Any]) -> tuple[WindowLayout, str, int, str]:
    """Validate a ``lookup`` request: (layout of one frame, slot, time, frame_id). Raises ProtocolError."""
    layout = layout_from_request(message)
    if layout.frames != 1 or layout.want != (0,) or layout.references:
        raise ProtocolError("a lookup carries one frame ('frames': 1, 'want': [0]) and no references")
    time = message.get("time")
    if not isinstance(time, int) or isinstance(time, bool):
        raise ProtocolError(f"'time' must be a frame number, got {time!r}")
    return layout, _hex(message, "slot"), time, _hex(message, "frame_id")


def layout_from_request(message: dict[str, Any]) -> WindowLayout:
    """Validate the geometry of an ``inpaint`` request. Raises ProtocolError."""
    frames = _int(message, "frames", 1, MAX_FRAMES)
    height = _int(message, "height", 1, MAX_SIDE)
    width = _int(message, "width", 1, MAX_SIDE)
    channels = _int(message, "channels", 3, 4)
    want = message.get("want")
    if (
        not isinstance(want, list)
        or not want
        or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < frames for i in want)
    ):
        raise ProtocolError(
            f"'want' must be a non-empty list of frame indices in [0, {frames}), got {want!r}"
        )
    references = message.get("references", [])
    if (
        not isinstance(references, list)
        or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < frames for i in references)
        or len(set(references)) != len(references)
    ):
        raise ProtocolError(
            f"'references' must be a list of distinct frame indices in [0, {frames}), got {references!r}"
        )
    layout = WindowLayout(frames, height, width, channels, tuple(want), tuple(references))
    if "out_offset" in message and message["out_offset"] != layout.out_offset:
        raise ProtocolError(
            f"'out_offset' {message['out_offset']!r} does not match the layout ({layout.out_offset})"
        )
    return layout


@dataclass(frozen=True)
class FillParams:
    """Per-request fill options (they go to the engine and into the cache key).

    Attributes:
        expand: grow the matte by this many pixels.
        feather: soften the fill's edge over this many pixels.
        shaper: scene-linear to [0, 1] mapping, e.g. ``"acescct"`` or ``"none"``.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        weights: weights file, or None for the server's default.
        track: True = the clean plate as the weights say (the shipped ones track the camera);
            False = the locked-off plate (``combcn inpaint --no-track``).
        reference_wins: where a reference reaches, it wins over a nearer frame that shows the
            point itself (``combcn inpaint --reference-wins``); used only with references.
    """

    expand: int = 0
    feather: float = 0.0
    shaper: str = "acescct"
    device: str = "auto"
    weights: str | None = None
    track: bool = True
    reference_wins: bool = False

    def key(self) -> bytes:
        fields = [self.expand, self.feather, self.shaper, self.device, self.weights, self.track]
        return json.dumps([*fields, self.reference_wins], separators=(",", ":")).encode()


def params_from_request(message: dict[str, Any]) -> FillParams:
    """Validate the ``params`` object of an ``inpaint`` request. Raises ProtocolError."""
    raw = message.get("params", {})
    if not isinstance(raw, dict):
        raise ProtocolError("'params' must be a JSON object")
    unknown = set(raw) - {"expand", "feather", "shaper", "device", "weights", "track", "reference_wins"}
    if unknown:
        raise ProtocolError(f"unknown params {sorted(unknown)}")
    expand = raw.get("expand", 0)
    if not isinstance(expand, int) or isinstance(expand, bool) or not 0 <= expand <= 4096:
        raise ProtocolError(f"'expand' must be an integer in [0, 4096], got {expand!r}")
    feather = raw.get("feather", 0.0)
    if (
        not isinstance(feather, int | float)
        or isinstance(feather, bool)
        or not 0.0 <= float(feather) <= 4096.0
    ):
        raise ProtocolError(f"'feather' must be a number in [0, 4096], got {feather!r}")
    shaper = raw.get("shaper", "acescct")
    if not isinstance(shaper, str) or not shaper or len(shaper) > 64:
        raise ProtocolError(f"'shaper' must be a short string, got {shaper!r}")
    device = raw.get("device", "auto")
    if device not in ("auto", "cpu", "cuda") and not (isinstance(device, str) and device.startswith("cuda:")):
        raise ProtocolError(f"'device' must be 'auto', 'cpu' or 'cuda', got {device!r}")
    weights = raw.get("weights") or None
    if weights is not None and (not isinstance(weights, str) or len(weights) > 4096):
        raise ProtocolError(f"'weights' must be a file path, got {weights!r}")
    track = raw.get("track", True)
    if not isinstance(track, bool):
        raise ProtocolError(f"'track' must be true or false, got {track!r}")
    reference_wins = raw.get("reference_wins", False)
    if not isinstance(reference_wins, bool):
        raise ProtocolError(f"'reference_wins' must be true or false, got {reference_wins!r}")
    return FillParams(expand, float(feather), shaper, device, weights, track, reference_wins)
