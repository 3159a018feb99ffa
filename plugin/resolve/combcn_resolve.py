"""CombCN Inpaint for DaVinci Resolve (Workspace > Scripts > CombCN Inpaint).

Takes the plate under the playhead on the current timeline (an EXR or DPX sequence), finds its
matte, runs ``combcn inpaint ... --progress json`` as a child process (progress in a window with a
Cancel button when Fusion's UIManager is there, and in Workspace > Console), imports the result into
the media-pool folder that holds the plate, gives it the plate's colour clip attributes and, unless
turned off, places it on a free video track above the plate, at the same record frames, checking
what Resolve placed.

Which clip is the plate: every video track is walked at the playhead (not
``GetCurrentVideoItem``, which answers with the top-most item, often the matte or an earlier
result). Image sequences named ``*_matte``, ``*_reference`` or ``*_combcn`` (our results) are never
plates; of the rest, the lowest one is the plate and the clip on the track right above it is its
matte (unless the media pool has a named matte). Two plates under the playhead are ambiguous: the
run stops and says which tracks, and ``"plate_track": N`` in the options file chooses.

Matte convention, first match wins:

1. a media-pool clip (any folder) named like the plate with ``_matte`` added to its stem:
   ``plate.[1001-1100].exr`` -> ``plate_matte.[1001-1100].exr`` (extension and frame range may differ);
2. the image sequence on the video track directly above the plate, under the playhead (never a
   ``*_reference`` clip).

Reference frames (optional): a media-pool clip (any folder) named like the plate with ``_reference``
added to its stem, ``plate_reference.1012.exr`` (one frame) or ``plate_reference.[1012-1013].exr``
(several), holds frames the artist cleaned (the plate's frame with the hole painted, or a clean plate).
Each is given to the engine as ``--reference N=file`` at the frame its own file number says: number a
cleaned frame like the plate's file it cleans (its timeline position plays no part). A number the
plate's files do not have is refused in one line before the engine runs.

Frames: the part of the sequence the timeline item shows, in one numbering for reading and placing:
the clip's ``Start`` property + the item's ``GetLeftOffset()``, for its length (AYON's convention), or
the whole sequence with ``"whole_clip": true``. A matte on the timeline is mapped through its own item
the same way (linked, numbered like the plate, when it is slipped or numbered otherwise). A retimed
item (speed change, or a clip rate other than the timeline's) is refused: its timeline frames are
not its files' frames. Output:
``<plate folder>/combcn/<stem>_combcn.%04d.<ext>`` unless ``output_dir`` is set. Options come from
``$XDG_CONFIG_HOME/combcn/resolve.json`` (``~/.config/combcn/resolve.json``) or the file named by
``COMBCN_RESOLVE_CONFIG``; see docs/HOSTS.md.

No inpainting happens in Resolve's process: the engine is the ``combcn`` program (see combcn_host).
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import re
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

_COMMON = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "common")
if os.path.isdir(_COMMON) and os.path.abspath(_COMMON) not in sys.path:
    sys.path.insert(0, os.path.abspath(_COMMON))

import combcn_host  # noqa: E402  (found through the path set just above)

if TYPE_CHECKING:
    from fusionscript import (
        Folder,
        MediaPool,
        MediaPoolClipInfo,
        MediaPoolItem,
        Resolve,
        Timeline,
        TimelineItem,
    )

SEQUENCE_EXTENSIONS = (".exr", ".dpx")
# Clip attributes that say how Resolve reads a clip's colours (colour-managed and ACES projects).
COLOUR_PROPERTIES = ("Input Color Space", "IDT")
UPSTREAM_FOLDER = ".combcn-upstream"
CONSOLE_STEP = 10  # a console line per this many percent of the frames
MATTE_SUFFIX = "_matte"
REFERENCE_SUFFIX = "_reference"
OUTPUT_SUFFIX = "_combcn"
ENV_CONFIG = "COMBCN_RESOLVE_CONFIG"
_BRACKETS = re.compile(r"^(?P<head>.*?)\[(?P<first>\d+)-(?P<last>\d+)\](?P<tail>[^\[\]]*)$")
_FILE_NUMBER = re.compile(r"(?:^|[._-])(?P<frame>\d+)(?P<ext>\.[A-Za-z0-9]+)$")
_STEM = re.compile(r"^(?P<stem>.*?)[._-]*(\[\d+-\d+\]|\d+)?(\.[A-Za-z0-9]+)?$")


@dataclass(frozen=True)
class Options:
    """Settings of a run (keys of the JSON options file)."""

    matte_channel: str | None = None
    invert: bool = False
    expand: int = 0
    feather: float = 0.0
    shaper: str | None = None
    device: str | None = None
    weights: str | None = None
    track: bool = True
    output_dir: str | None = None
    whole_clip: bool = False
    place_on_track: bool = True
    overwrite: bool = True
    plate_track: int | None = None

    @classmethod
    def from_mapping(cls, values: dict[str, Any], origin: str) -> Options:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise combcn_host.HostError(
                f"{origin}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**values)


def load_options(path: str | None = None) -> Options:
    """Options from ``path``, else ``$COMBCN_RESOLVE_CONFIG``, else ``~/.config/combcn/resolve.json``.

    A missing default file means default options; a named file that is missing is an error.
    """
    if path is None:
        path = os.environ.get(ENV_CONFIG)
    if path is None:
        config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
        path = os.path.join(config, "combcn", "resolve.json")
        if not os.path.isfile(path):
            return Options()
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except (OSError, ValueError) as exc:
        raise combcn_host.HostError(f"cannot read the options file {path}: {exc}") from exc
    if not isinstance(values, dict):
        raise combcn_host.HostError(f"{path}: expected a JSON object of options")
    return Options.from_mapping(values, path)


@dataclass(frozen=True)
class Sequence:
    """An image sequence on disk: ``pattern`` with a printf token (``plate.%04d.exr``), first/last frame."""

    pattern: str
    first: int
    last: int

    @property
    def extension(self) -> str:
        return os.path.splitext(self.pattern)[1].lower()


def parse_sequence_path(path: str) -> Sequence:
    """Resolve's sequence path ``/a/plate.[1001-1100].exr`` -> ``Sequence('/a/plate.%04d.exr', 1001, 1100)``.

    Padding is the digit count of the first number (as Resolve names ``[0001-0100]``).
    """
    match = _BRACKETS.match(path)
    if match is None:
        raise combcn_host.HostError(
            f"{path} is not an image sequence (Resolve names them like plate.[1001-1100].exr); "
            "CombCN works on EXR or DPX sequences"
        )
    first, last = match["first"], match["last"]
    pattern = f"{match['head']}%0{len(first)}d{match['tail']}"
    return Sequence(pattern, int(first), int(last))


def clip_stem(name: str) -> str:
    """``plate.[1001-1100].exr`` / ``plate_1001.exr`` / ``plate`` -> ``plate``."""
    match = _STEM.match(name)
    return match["stem"] if match else name


def clip_sequence(item: MediaPoolItem, role: str) -> Sequence:
    path = item.GetClipProperty("File Path")
    if not isinstance(path, str) or not path:
        raise combcn_host.HostError(
            f"the {role} clip {item.GetName()} has no file path (is it offline or generated?)"
        )
    sequence = parse_sequence_path(path)
    if role == "source" and sequence.extension not in SEQUENCE_EXTENSIONS:
        raise combcn_host.HostError(f"the source clip {path} is not an EXR or DPX sequence")
    return sequence


def walk_folders(folder: Folder) -> Iterator[Folder]:
    yield folder
    for sub in folder.GetSubFolderList() or []:
        yield from walk_folders(sub)


def folder_of(media_pool: MediaPool, item: MediaPoolItem) -> Folder | None:
    """The media-pool folder holding ``item`` (None if not found)."""
    wanted = item.GetUniqueId()
    for folder in walk_folders(media_pool.GetRootFolder()):
        if any(clip.GetUniqueId() == wanted for clip in folder.GetClipList() or []):
            return folder
    return None


def _clip_beside(media_pool: MediaPool, source: MediaPoolItem, suffix: str) -> MediaPoolItem | None:
    """The first media-pool clip whose stem is the source's stem + ``suffix``, or None."""
    wanted = clip_stem(source.GetName()) + suffix
    for folder in walk_folders(media_pool.GetRootFolder()):
        for clip in folder.GetClipList() or []:
            if clip_stem(clip.GetName()) == wanted:
                return clip
    return None


def matte_by_name(media_pool: MediaPool, source: MediaPoolItem) -> MediaPoolItem | None:
    """Convention 1: a media-pool clip whose stem is the source's stem + ``_matte``."""
    return _clip_beside(media_pool, source, MATTE_SUFFIX)


def reference_by_name(media_pool: MediaPool, source: MediaPoolItem) -> MediaPoolItem | None:
    """A media-pool clip whose stem is the source's stem + ``_reference`` (frames the artist cleaned)."""
    return _clip_beside(media_pool, source, REFERENCE_SUFFIX)


def reference_files(clip: MediaPoolItem, plate: Sequence) -> tuple[tuple[int, str], ...]:
    """(frame, file) of every frame of a reference clip, at the frame its file number says (the
    plate's file numbering): ``plate_reference.[1012-1013].exr`` or one file ``plate_reference.1012.exr``.

    Raises:
        HostError: no file path, no frame number, not EXR/DPX, or a number the plate's files lack.
    """
    path = clip.GetClipProperty("File Path")
    name = clip.GetName()
    if not isinstance(path, str) or not path:
        raise combcn_host.HostError(f"the reference clip {name} has no file path (is it offline?)")
    if _BRACKETS.match(path):
        sequence = parse_sequence_path(path)
        frames = [(f, sequence.pattern % f) for f in range(sequence.first, sequence.last + 1)]
        extension = sequence.extension
    else:
        match = _FILE_NUMBER.search(os.path.basename(path))
        if match is None:
            raise combcn_host.HostError(
                f"the reference clip {name} has no frame number in its file name; name it like the "
                f"plate's frame it cleans (e.g. {clip_stem(name)}.1012{os.path.splitext(path)[1]})"
            )
        frames = [(int(match["frame"]), path)]
        extension = match["ext"].lower()
    if extension not in SEQUENCE_EXTENSIONS:
        raise combcn_host.HostError(f"the reference clip {name} is not EXR or DPX ({path})")
    outside = [f for f, _ in frames if not plate.first <= f <= plate.last]
    if outside:
        raise combcn_host.HostError(
            f"the reference clip {name} is numbered {outside[0]}, but the plate's files are "
            f"{plate.first}-{plate.last}; number each cleaned frame like the plate's file it cleans"
        )
    return tuple(frames)


def timecode_frames(timecode: str, fps: float) -> int:
    """``01:00:00:00`` (``;`` before the frames: drop-frame) -> frames counted from 00:00:00:00."""
    parts = re.split(r"[:;.,]", timecode.strip())
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        raise combcn_host.HostError(f"cannot read the timecode {timecode!r}")
    hours, minutes, seconds, frames = (int(p) for p in parts)
    nominal = int(round(fps))
    count = ((hours * 60 + minutes) * 60 + seconds) * nominal + frames
    if ";" in timecode or "," in timecode:  # SMPTE drop-frame: 2 (4 at 59.94) labels skipped a minute
        dropped = nominal // 15
        total_minutes = hours * 60 + minutes
        count -= dropped * (total_minutes - total_minutes // 10)
    return count


def timeline_rate(timeline: Timeline) -> float:
    """Frames per second of the timeline (``timelineFrameRate``, e.g. ``"23.976"``)."""
    text = str(timeline.GetSetting("timelineFrameRate") or "")
    match = re.match(r"\s*(\d+(?:\.\d+)?)", text)
    if match is None:
        raise combcn_host.HostError(f"cannot read the timeline frame rate {text!r}")
    return float(match.group(1))


def playhead_frame(timeline: Timeline) -> int:
    """The playhead as a record frame (the numbers GetStart/GetEnd use)."""
    fps = timeline_rate(timeline)
    offset = timecode_frames(timeline.GetCurrentTimecode(), fps) - timecode_frames(
        timeline.GetStartTimecode(), fps
    )
    return int(timeline.GetStartFrame()) + offset


@dataclass(frozen=True)
class Layer:
    """An image sequence under the playhead: its video track, timeline item, clip and files."""

    track: int
    item: TimelineItem
    clip: MediaPoolItem
    sequence: Sequence

    @property
    def stem(self) -> str:
        return clip_stem(self.clip.GetName())

    def describe(self) -> str:
        return f"{self.clip.GetName()} on V{self.track}"


def layers_at(timeline: Timeline, frame: int) -> list[Layer]:
    """Every image sequence on a video track at record ``frame``, lowest track first."""
    found: list[Layer] = []
    for track in range(1, int(timeline.GetTrackCount("video")) + 1):
        for item in timeline.GetItemListInTrack("video", track) or []:
            if not item.GetStart(False) <= frame < item.GetEnd(False):
                continue
            clip = item.GetMediaPoolItem()
            path = clip.GetClipProperty("File Path") if clip else None
            if not isinstance(path, str) or _BRACKETS.match(path) is None:
                continue  # titles, generators, movies: never a plate or matte
            found.append(Layer(track, item, clip, parse_sequence_path(path)))
    return found


def pick_plate(
    media_pool: MediaPool, layers: list[Layer], plate_track: int | None
) -> tuple[Layer, MediaPoolItem | None, str]:
    """The plate among ``layers`` and its matte (clip, where it came from); see the module docstring."""

    def plate_like(layer: Layer) -> bool:
        return layer.sequence.extension in SEQUENCE_EXTENSIONS and not layer.stem.endswith(
            (MATTE_SUFFIX, REFERENCE_SUFFIX, OUTPUT_SUFFIX)
        )

    if plate_track is not None:
        chosen = [layer for layer in layers if layer.track == plate_track]
        if not chosen or not plate_like(chosen[0]):
            raise combcn_host.HostError(
                f"plate_track is {plate_track} but there is no EXR/DPX plate on V{plate_track} "
                "under the playhead"
            )
        plates = chosen[:1]
    else:
        plates, matte_tracks = [], set()
        for layer in layers:
            if layer.track in matte_tracks or not plate_like(layer):
                continue
            plates.append(layer)
            if matte_by_name(media_pool, layer.clip) is None:
                matte_tracks.add(layer.track + 1)  # convention 2: the clip above is this plate's matte
    if not plates:
        raise combcn_host.HostError(
            "no EXR or DPX plate under the playhead (clips named *_matte or *_combcn are not plates); "
            "put the playhead over the plate"
        )
    if len(plates) > 1:
        raise combcn_host.HostError(
            f"{len(plates)} plates under the playhead ({', '.join(p.describe() for p in plates)}); "
            f'say which with "plate_track": N in {ENV_CONFIG} or ~/.config/combcn/resolve.json'
        )
    plate = plates[0]
    named = matte_by_name(media_pool, plate.clip)
    if named is not None:
        return plate, named, "media pool"
    above = [
        layer
        for layer in layers
        if layer.track == plate.track + 1 and not layer.stem.endswith(REFERENCE_SUFFIX)
    ]
    return plate, (above[0].clip if above else None), "track above"


def _number(value: object) -> float | None:
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def clip_start(clip: MediaPoolItem, sequence: Sequence) -> int:
    """The clip's first frame in its own numbering: its ``Start`` clip property (an image sequence's
    first file frame), or the sequence's first file frame when Resolve gives no number."""
    start = _number(clip.GetClipProperty("Start"))
    return int(start) if start is not None else sequence.first


def check_timing(layer: Layer, fps: float) -> None:
    """Refuse (one line) an item whose timeline frames are not its files' frames: retimed, or a clip
    rate other than the timeline's."""
    clip_fps = _number(layer.clip.GetClipProperty("FPS"))
    if clip_fps is not None and abs(clip_fps - fps) > 1e-3:
        raise combcn_host.HostError(
            f"{layer.describe()} plays at {clip_fps:g} fps on a {fps:g} fps timeline, so its timeline frames "
            "are not its files' frames; set the clip's frame rate to the timeline's (Clip Attributes)"
        )
    duration = int(layer.item.GetDuration(False))
    start, end = int(layer.item.GetSourceStartFrame()), int(layer.item.GetSourceEndFrame())
    if start == end == 0 and duration > 1:  # what Resolve reports on items of an XML-imported timeline
        raise combcn_host.HostError(
            f"Resolve reports no source frames for {layer.describe()} (a timeline imported from XML?); "
            "place the clip from the media pool and run again"
        )
    # Only the span is used (source frames per record frame: the speed witness), never the numbers.
    if end - start != duration:
        raise combcn_host.HostError(
            f"{layer.describe()} is retimed ({end - start} source frames over {duration} timeline frames); "
            "inpaint the clip at 100% speed and retime the result"
        )


def first_shown(layer: Layer) -> int:
    """The frame the item shows at its first record frame: the clip's ``Start`` + the item's
    ``GetLeftOffset()``. This is the convention of production Resolve pipelines (AYON/OpenPype: an
    image sequence's media reference starts at ``Start``, its first file frame, and the item's source
    range at the left offset), used here for reading and for placing alike."""
    return clip_start(layer.clip, layer.sequence) + int(layer.item.GetLeftOffset(False))


def source_frames(layer: Layer, fps: float) -> tuple[int, int]:
    """The file frames (first, last) the timeline item shows; refuses a retimed item (one line)."""
    check_timing(layer, fps)
    first = first_shown(layer)
    return first, first + int(layer.item.GetDuration(False)) - 1


def matte_shift(plate: Layer, matte: Layer) -> int:
    """Matte file frame minus plate file frame for what shows at the same record frame."""
    return (first_shown(matte) - int(matte.item.GetStart(False))) - (
        first_shown(plate) - int(plate.item.GetStart(False))
    )


def free_track_above(timeline: Timeline, lowest: int, start: float, end: float) -> int:
    """The first video track >= ``lowest`` with nothing in [start, end); adds a track if none is free."""
    count = timeline.GetTrackCount("video")
    for track in range(lowest, count + 1):
        items = timeline.GetItemListInTrack("video", track) or []
        if all(other.GetEnd(False) <= start or other.GetStart(False) >= end for other in items):
            return track
    # The stubs mark AddTrack's sub-track type as required; Resolve documents it as optional (audio only).
    add_track: Callable[[str], bool] = timeline.AddTrack  # type: ignore[assignment]
    if not add_track("video"):
        raise combcn_host.HostError("Resolve refused to add a video track for the result")
    return count + 1


def placement(
    clip: MediaPoolItem, rendered: tuple[int, int], shown: tuple[int, int], record_start: int, track: int
) -> MediaPoolClipInfo:
    """AppendToTimeline's clip info for the result: the frames of ``shown`` that were ``rendered``.

    Frames are the clip's own numbers (its ``Start`` property: the first file frame, for a sequence
    imported with StartIndex) and ``endFrame`` is exclusive; ``recordFrame`` is an absolute record frame.
    """
    first, last = max(rendered[0], shown[0]), min(rendered[1], shown[1])
    clip_start = _number(clip.GetClipProperty("Start"))
    base = int(clip_start) if clip_start is not None else rendered[0]
    return {
        "mediaPoolItem": clip,
        "startFrame": base + first - rendered[0],
        "endFrame": base + last - rendered[0] + 1,
        "mediaType": 1,  # video only
        "trackIndex": track,
        "recordFrame": record_start + first - shown[0],
    }


def say(text: str) -> None:
    """Progress and results go to Resolve's Workspace > Console."""
    print(f"CombCN: {text}", flush=True)


def place_result(
    timeline: Timeline, media_pool: MediaPool, info: MediaPoolClipInfo, frames: int
) -> TimelineItem:
    """Append ``info`` and check what Resolve placed: its start, end and track, and that it shows
    ``frames`` frames. A wrong item is taken off the timeline again; either way one line says why."""
    name = info["mediaPoolItem"].GetName()
    track, record = info["trackIndex"], info["recordFrame"]
    # fusionscript-stubs 21.0.0 declares the clip-info form after a non-@overload def, so only the
    # MediaPoolItem form type-checks; the README documents this list-of-dicts form.
    placed = media_pool.AppendToTimeline([info])  # type: ignore[arg-type]
    if not placed:
        raise combcn_host.HostError(f"imported {name} but Resolve did not place it on video track {track}")
    item = placed[0]
    # Resolve may answer with an item whose getters all return None (AYON's loader checks for it).
    start, end, duration = item.GetStart(False), item.GetEnd(False), item.GetDuration(False)
    if start is None or end is None or duration is None:
        raise combcn_host.HostError(
            f"imported {name}, but Resolve placed nothing usable on video track {track} (the placed item "
            "has no position); place it by hand from the media pool"
        )
    on_track = any(
        other.GetStart(False) == start and other.GetEnd(False) == end
        for other in timeline.GetItemListInTrack("video", track) or []
    )
    problem = ""
    if int(duration) != frames or int(end) - int(start) != frames:
        problem = (
            f"Resolve placed {int(duration)} frame(s) of {name} where {frames} were rendered (its "
            "frame numbering differs from the one CombCN uses: the clip's Start + the item's left offset)"
        )
    elif int(start) != record or not on_track:
        problem = f"Resolve placed {name} at record frame {start}, not {record} on video track {track}"
    if problem:
        delete: Callable[[list[TimelineItem]], bool] | None = getattr(timeline, "DeleteClips", None)
        removed = delete is not None and bool(delete([item]))
        raise combcn_host.HostError(
            problem
            + ("; it was taken off the timeline" if removed else "; delete that item")
            + ": place the clip by hand from the media pool"
        )
    return item


def copy_colour(plate: MediaPoolItem, result: MediaPoolItem) -> list[str]:
    """Give ``result`` the plate's colour clip attributes (input colour space, IDT); returns the ones
    Resolve refused (the README: some are read-only in some projects; check SetClipProperty)."""
    refused = []
    for key in COLOUR_PROPERTIES:
        value = plate.GetClipProperty(key)
        if not isinstance(value, str) or not value or result.GetClipProperty(key) == value:
            continue
        if not result.SetClipProperty(key, value):
            refused.append(f"{key} = {value}")
    return refused


def link_matte(matte: Sequence, shift: int, plate: Sequence, folder: str) -> str:
    """A matte pattern numbered like the plate: links (symbolic, else hard, else copies) in
    ``folder`` to the matte files ``shift`` frames on from each plate frame. Returns the pattern."""
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    pattern = os.path.join(folder, "matte.%04d" + matte.extension)
    for frame in range(plate.first, plate.last + 1):
        if not matte.first <= frame + shift <= matte.last:
            continue  # no matte there: the engine says so if it reads that frame
        source = matte.pattern % (frame + shift)
        link = pattern % frame
        try:
            os.symlink(os.path.abspath(source), link)
        except OSError:
            try:
                os.link(source, link)
            except OSError:
                shutil.copyfile(source, link)
    return pattern


def remove_links(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    parent = os.path.dirname(folder)
    if os.path.isdir(parent) and not os.listdir(parent):
        os.rmdir(parent)


# Engines this script started and has not seen end: stopped when the script's Python exits.
_running: set[combcn_host.EngineProcess] = set()


@atexit.register
def stop_running() -> None:
    """End every engine still running (the script was stopped, or Resolve's Python is exiting)."""
    for proc in list(_running):
        proc.cancel(grace_s=1.0)
        _running.discard(proc)


class Console:
    """Progress in Workspace > Console: a line every ``CONSOLE_STEP`` percent; no cancel."""

    def __init__(self) -> None:
        self._step = -1

    def line(self, progress: combcn_host.Progress) -> None:
        step = progress.percent // CONSOLE_STEP
        if step != self._step or progress.done == progress.total:
            self._step = step
            say(f"frame {progress.frame} ({progress.done}/{progress.total}, {progress.percent}%)")

    def follow(self, proc: combcn_host.EngineProcess) -> combcn_host.Result:
        self._step = -1
        return proc.wait(on_progress=self.line)

    def message(self, text: str) -> None:
        """Shown where the artist looks (the console line is printed by the caller)."""


class Window(Console):
    """A progress window with a Cancel button (Fusion's UIManager, which Resolve's scripts get through
    ``fusion``/``fu``/``app`` and ``bmd``), besides the console lines."""

    def __init__(self, ui: Any, bmd: Any) -> None:
        super().__init__()
        self.ui = ui
        self.disp = bmd.UIDispatcher(ui)

    def _window(self, wid: str, text: str, button: str) -> Any:
        ui = self.ui
        return self.disp.AddWindow(
            {"ID": wid, "WindowTitle": "CombCN Inpaint", "Geometry": [400, 300, 520, 120]},
            ui.VGroup(
                [
                    ui.Label({"ID": "Status", "Text": text, "WordWrap": True}),
                    ui.HGroup([ui.HGap(0, 1), ui.Button({"ID": button, "Text": button})]),
                ]
            ),
        )

    def follow(self, proc: combcn_host.EngineProcess) -> combcn_host.Result:
        self._step = -1
        state: dict[str, Any] = {}
        cancel = threading.Event()

        def work() -> None:
            try:
                state["result"] = proc.wait(
                    on_progress=lambda p: state.__setitem__("progress", p), should_cancel=cancel.is_set
                )
            except BaseException as exc:  # re-raised in this thread below
                state["error"] = exc

        win = self._window("CombCNProgress", "starting combcn ...", "Cancel")
        status = win.Find("Status")
        timer = self.ui.Timer({"ID": "CombCNTick", "Interval": 200})
        worker = threading.Thread(target=work, name="combcn engine", daemon=True)

        def on_cancel(ev: Any) -> None:
            cancel.set()
            status.Text = "cancelling ..."

        def tick(ev: Any) -> None:
            progress = state.pop("progress", None)
            if progress is not None and not cancel.is_set():
                done = f"{progress.done} of {progress.total} ({progress.percent}%)"
                status.Text = f"frame {progress.frame}: {done}"
                self.line(progress)
            if not worker.is_alive():
                self.disp.ExitLoop()

        win.On.Cancel.Clicked = on_cancel
        win.On.CombCNProgress.Close = on_cancel
        self.disp.On.Timeout = tick
        worker.start()
        win.Show()
        timer.Start()
        try:
            self.disp.RunLoop()
        finally:
            timer.Stop()
            win.Hide()
            if worker.is_alive():  # the loop ended another way: stop the engine, then wait for it
                cancel.set()
            worker.join()
        if "error" in state:
            raise state["error"]
        result: combcn_host.Result = state["result"]
        return result

    def message(self, text: str) -> None:
        win = self._window("CombCNMessage", text, "OK")

        def close(ev: Any) -> None:
            self.disp.ExitLoop()

        win.On.OK.Clicked = close
        win.On.CombCNMessage.Close = close
        win.Show()
        self.disp.RunLoop()
        win.Hide()


def feedback_for(script_globals: dict[str, Any] | None) -> Console:
    """A progress window when the script has Fusion's UIManager, else console lines only."""
    found = script_globals or {}
    bmd = found.get("bmd")
    for name in ("fusion", "fu", "app"):
        ui = getattr(found.get(name), "UIManager", None)
        if ui is not None and bmd is not None:
            try:
                return Window(ui, bmd)
            except Exception as exc:  # an older UIManager: the console still shows the progress
                say(f"no progress window ({exc}); progress in this console")
                break
    return Console()


def run_engine(request: combcn_host.InpaintRequest, feedback: Console) -> combcn_host.Result:
    """Run ``combcn inpaint`` as a child process, followed by ``feedback``; the child never outlives
    this call (it is stopped on any error, a cancel or the script being stopped)."""
    proc = combcn_host.EngineProcess(request)
    _running.add(proc)
    try:
        proc.start()
        return feedback.follow(proc)
    finally:
        proc.cancel()  # a no-op once the engine has exited
        _running.discard(proc)


@dataclass
class Outcome:
    """What a run did: the request it ran, the imported clip and the track it was placed on (or None)."""

    request: combcn_host.InpaintRequest
    imported: MediaPoolItem
    track: int | None


def _matte_pattern(
    plate: Layer,
    matte_clip: MediaPoolItem,
    layers: list[Layer],
    fps: float,
    folder: str,
    frames: tuple[int, int],
) -> tuple[str, str | None]:
    """The matte pattern numbered like the plate's files, and the links folder made for it (or None).

    A matte on the timeline under the playhead is mapped through its own item (its Start + left
    offset against its record frames), so a slipped matte or one numbered from 1 lines up; a matte
    found only in the media pool is taken to share the plate's frame numbers, and refused in one line
    when it does not hold the ``frames`` to write (numbered otherwise: only its timeline item can say
    how it lines up).
    """
    matte = clip_sequence(matte_clip, "matte")
    wanted = matte_clip.GetUniqueId()
    item = next((layer for layer in layers if layer.clip.GetUniqueId() == wanted), None)
    if item is None:
        if not (matte.first <= frames[0] and frames[1] <= matte.last):
            raise combcn_host.HostError(
                f"the matte {matte_clip.GetName()} (media pool) holds frames {matte.first}-{matte.last}, "
                f"not the plate's {frames[0]}-{frames[1]}; put it on the track above the plate, lined up, "
                "and run again"
            )
        return matte.pattern, None
    check_timing(item, fps)
    shift = matte_shift(plate, item)
    if shift == 0:
        return matte.pattern, None
    say(f"the matte shows file frame N{shift:+d} where the plate shows N: linked, numbered like the plate")
    return link_matte(matte, shift, plate.sequence, folder), folder


def inpaint_current_clip(resolve: Resolve, options: Options, feedback: Console | None = None) -> Outcome:
    """Inpaint the plate under the playhead and bring the result back (see the module docstring)."""
    feedback = feedback or Console()
    project = resolve.GetProjectManager().GetCurrentProject()
    if not project:
        raise combcn_host.HostError("open a project first")
    timeline = project.GetCurrentTimeline()
    if not timeline:
        raise combcn_host.HostError("open a timeline first")
    media_pool = project.GetMediaPool()
    fps = timeline_rate(timeline)
    layers = layers_at(timeline, playhead_frame(timeline))
    plate, matte_clip, matte_origin = pick_plate(media_pool, layers, options.plate_track)
    source = plate.sequence
    if matte_clip is None:
        raise combcn_host.HostError(
            f"no matte for {plate.clip.GetName()}: import one named "
            f"{plate.stem}{MATTE_SUFFIX}.[first-last]{source.extension} "
            "or put the matte clip on the track right above the plate"
        )
    say(f"plate {plate.describe()}, matte {matte_clip.GetName()} (from the {matte_origin})")
    reference_clip = reference_by_name(media_pool, plate.clip)
    references = reference_files(reference_clip, source) if reference_clip is not None else ()
    if reference_clip is not None:
        numbers = ", ".join(str(f) for f, _ in references)
        say(f"reference {reference_clip.GetName()} at frame(s) {numbers}")

    shown = source_frames(plate, fps)
    first, last = (source.first, source.last) if options.whole_clip else shown
    output_dir = options.output_dir or os.path.join(os.path.dirname(source.pattern), "combcn")
    name = os.path.basename(source.pattern)
    token = re.search(r"%0\d+d", name)
    assert token is not None  # parse_sequence_path always writes one
    stem = name[: token.start()].rstrip("._-")
    output = os.path.join(output_dir, f"{stem}{OUTPUT_SUFFIX}.{token.group(0)}{source.extension}")

    links: str | None = None
    try:
        matte, links = _matte_pattern(
            plate, matte_clip, layers, fps, os.path.join(output_dir, UPSTREAM_FOLDER, stem), (first, last)
        )
        request = combcn_host.InpaintRequest(
            source=source.pattern,
            output=output,
            first=first,
            last=last,
            matte=matte,
            matte_channel=options.matte_channel,
            invert=options.invert,
            expand=options.expand,
            feather=options.feather,
            shaper=options.shaper,
            device=options.device,
            weights=options.weights,
            track=options.track,
            overwrite=options.overwrite,
            references=references,
        )
        say(f"inpainting {source.pattern} frames {first}-{last} -> {output}")
        result = run_engine(request, feedback)
    finally:
        if links is not None:
            remove_links(links)
    say(f"wrote {result.written} frame(s), skipped {result.skipped}")

    folder = folder_of(media_pool, plate.clip)
    previous = media_pool.GetCurrentFolder()
    if folder is not None:
        media_pool.SetCurrentFolder(folder)
    try:
        imported = media_pool.ImportMedia([{"FilePath": output, "StartIndex": first, "EndIndex": last}])
    finally:
        if folder is not None and previous:
            media_pool.SetCurrentFolder(previous)
    if not imported:
        raise combcn_host.HostError(f"Resolve did not import {output} ({first}-{last}); import it by hand")
    clip = imported[0]
    say(f"imported {clip.GetName()}")
    refused = copy_colour(plate.clip, clip)
    if refused:
        say(f"Resolve kept its own {', '.join(refused)} on {clip.GetName()}; set them in Clip Attributes")

    track: int | None = None
    if options.place_on_track:
        start, end = plate.item.GetStart(False), plate.item.GetEnd(False)
        track = free_track_above(timeline, plate.track + 1, start, end)
        info = placement(clip, (first, last), shown, int(start), track)
        place_result(timeline, media_pool, info, info["endFrame"] - info["startFrame"])
        say(f"placed on video track {track} at record frame {info['recordFrame']}")
    return Outcome(request, clip, track)


def connect(script_globals: dict[str, Any] | None = None) -> Resolve:
    """The running Resolve: ``app.GetResolve()`` (what the free edition's scripts get), the script's
    ``resolve``, ``bmd.scriptapp("Resolve")``, ``fusion.GetResolve()``, then DaVinciResolveScript."""
    found = script_globals or {}
    getters: list[Callable[[], Any]] = [
        lambda: found["app"].GetResolve(),
        lambda: found["resolve"],
        lambda: found["bmd"].scriptapp("Resolve"),
        lambda: found["fusion"].GetResolve(),
    ]
    app: Any = None
    for get in getters:
        try:
            app = get()
        except (KeyError, AttributeError, TypeError):  # not predefined, or not the object we hoped
            app = None
        if app is not None:
            break
    if app is None:
        try:
            import DaVinciResolveScript  # type: ignore[import-not-found]  # Resolve's own, not stubbed
        except ImportError as exc:
            raise combcn_host.HostError(
                "cannot import DaVinciResolveScript: run this from Workspace > Scripts, or add "
                "$RESOLVE_SCRIPT_API/Modules to PYTHONPATH"
            ) from exc
        app = DaVinciResolveScript.scriptapp("Resolve")
    if app is None:
        raise combcn_host.HostError(
            "Resolve is not running, or external scripting is off (Preferences > General)"
        )
    resolve: Resolve = app
    return resolve


def launch(script_globals: dict[str, Any] | None = None, executable: str | None = None) -> int:
    """Entry point of the installed menu script. Returns 0 on success, 1 on a reported failure."""
    if executable:
        combcn_host.set_installed_executable(executable)
    feedback = feedback_for(script_globals)
    try:
        outcome = inpaint_current_clip(connect(script_globals), load_options(), feedback)
    except combcn_host.HostError as exc:
        text = f"error: {exc}"
    except AttributeError as exc:  # a scripting call this Resolve does not have
        text = (
            f"error: this Resolve's scripting API lacks a call CombCN uses ({exc}); use Resolve 18 or newer"
        )
    except OSError as exc:  # the output folder or the matte links
        text = f"error: cannot write {exc.filename or ''}: {exc.strerror or exc}"
    else:
        say(f"done: {outcome.imported.GetName()}")
        return 0
    say(text)
    feedback.message(f"CombCN: {text}")
    return 1


if __name__ == "__main__":
    sys.exit(launch(globals()))
