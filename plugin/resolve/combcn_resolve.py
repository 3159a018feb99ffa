"""CombCN Inpaint for DaVinci Resolve (Workspace > Scripts > CombCN Inpaint).

Takes the clip under the playhead on the current timeline (an EXR or DPX sequence), finds its matte,
runs ``combcn inpaint ... --progress json`` (progress printed to Workspace > Console), imports the
result into the media-pool folder that holds the source clip and, unless turned off, places it on a
free video track above the source, at the same record frame.

Matte convention, first match wins:

1. a media-pool clip (any folder) named like the source with ``_matte`` added to its stem:
   ``plate.[1001-1100].exr`` -> ``plate_matte.[1001-1100].exr`` (extension and frame range may differ);
2. the clip on the video track directly above the source that covers the source's first frame.

Frames: the part of the sequence the timeline item uses (its left offset and duration), or the
whole sequence with ``"whole_clip": true``. Output: ``<source folder>/combcn/<stem>_combcn.%04d.<ext>``
unless ``output_dir`` is set. Options come from ``$XDG_CONFIG_HOME/combcn/resolve.json``
(``~/.config/combcn/resolve.json``) or the file named by ``COMBCN_RESOLVE_CONFIG``; see docs/HOSTS.md.

No inpainting happens in Resolve's process: the engine is the ``combcn`` program (see combcn_host).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
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
MATTE_SUFFIX = "_matte"
OUTPUT_SUFFIX = "_combcn"
ENV_CONFIG = "COMBCN_RESOLVE_CONFIG"
_BRACKETS = re.compile(r"^(?P<head>.*?)\[(?P<first>\d+)-(?P<last>\d+)\](?P<tail>[^\[\]]*)$")
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


def matte_by_name(media_pool: MediaPool, source: MediaPoolItem) -> MediaPoolItem | None:
    """Convention 1: a media-pool clip whose stem is the source's stem + ``_matte``."""
    wanted = clip_stem(source.GetName()) + MATTE_SUFFIX
    for folder in walk_folders(media_pool.GetRootFolder()):
        for clip in folder.GetClipList() or []:
            if clip_stem(clip.GetName()) == wanted:
                return clip
    return None


def matte_above(timeline: Timeline, item: TimelineItem) -> MediaPoolItem | None:
    """Convention 2: the clip on the video track right above ``item`` that covers its first frame."""
    _, track = item.GetTrackTypeAndIndex()
    if track + 1 > timeline.GetTrackCount("video"):
        return None
    start = item.GetStart(False)
    for other in timeline.GetItemListInTrack("video", track + 1) or []:
        if other.GetStart(False) <= start < other.GetEnd(False):
            return other.GetMediaPoolItem()
    return None


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


def say(text: str) -> None:
    """Progress and results go to Resolve's Workspace > Console."""
    print(f"CombCN: {text}", flush=True)


@dataclass
class Outcome:
    """What a run did: the request it ran, the imported clip and the track it was placed on (or None)."""

    request: combcn_host.InpaintRequest
    imported: MediaPoolItem
    track: int | None


def inpaint_current_clip(resolve: Resolve, options: Options) -> Outcome:
    """Inpaint the clip under the playhead and bring the result back (see the module docstring)."""
    project = resolve.GetProjectManager().GetCurrentProject()
    if not project:
        raise combcn_host.HostError("open a project first")
    timeline = project.GetCurrentTimeline()
    if not timeline:
        raise combcn_host.HostError("open a timeline first")
    item = timeline.GetCurrentVideoItem()
    if not item:
        raise combcn_host.HostError("put the playhead over the clip to inpaint (no video clip under it)")
    source_clip = item.GetMediaPoolItem()
    if not source_clip:
        raise combcn_host.HostError(f"the timeline item {item.GetName()} has no media-pool clip")
    source = clip_sequence(source_clip, "source")
    media_pool = project.GetMediaPool()

    matte_clip = matte_by_name(media_pool, source_clip)
    matte_origin = "media pool"
    if matte_clip is None:
        matte_clip = matte_above(timeline, item)
        matte_origin = "track above"
    if matte_clip is None:
        raise combcn_host.HostError(
            f"no matte for {source_clip.GetName()}: import one named "
            f"{clip_stem(source_clip.GetName())}{MATTE_SUFFIX}.[first-last]{source.extension} "
            "or put the matte clip on the track right above the plate"
        )
    matte = clip_sequence(matte_clip, "matte")
    say(f"matte {matte_clip.GetName()} (from the {matte_origin})")

    if options.whole_clip:
        first, last = source.first, source.last
    else:
        first = source.first + int(item.GetLeftOffset(False))
        last = min(source.last, first + int(item.GetDuration(False)) - 1)
    output_dir = options.output_dir or os.path.join(os.path.dirname(source.pattern), "combcn")
    name = os.path.basename(source.pattern)
    token = re.search(r"%0\d+d", name)
    assert token is not None  # parse_sequence_path always writes one
    stem = name[: token.start()].rstrip("._-")
    output = os.path.join(output_dir, f"{stem}{OUTPUT_SUFFIX}.{token.group(0)}{source.extension}")

    request = combcn_host.InpaintRequest(
        source=source.pattern,
        output=output,
        first=first,
        last=last,
        matte=matte.pattern,
        matte_channel=options.matte_channel,
        invert=options.invert,
        expand=options.expand,
        feather=options.feather,
        shaper=options.shaper,
        device=options.device,
        weights=options.weights,
        track=options.track,
        overwrite=options.overwrite,
    )
    say(f"inpainting {source.pattern} frames {first}-{last} -> {output}")
    result = combcn_host.run_inpaint(
        request, on_progress=lambda p: say(f"frame {p.frame} ({p.done}/{p.total}, {p.percent}%)")
    )
    say(f"wrote {result.written} frame(s), skipped {result.skipped}")

    folder = folder_of(media_pool, source_clip)
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

    track: int | None = None
    if options.place_on_track:
        _, source_track = item.GetTrackTypeAndIndex()
        start, end = item.GetStart(False), item.GetEnd(False)
        track = free_track_above(timeline, source_track + 1, start, end)
        # Only the frames the source item shows, so the result lines up with it frame for frame.
        item_first = source.first + int(item.GetLeftOffset(False))
        item_last = item_first + int(item.GetDuration(False)) - 1
        placement: MediaPoolClipInfo = {
            "mediaPoolItem": clip,
            "startFrame": max(item_first, first) - first,
            "endFrame": min(item_last, last) - first,
            "mediaType": 1,  # video only
            "trackIndex": track,
            "recordFrame": int(start) + max(0, first - item_first),
        }
        # fusionscript-stubs 21.0.0 declares the clip-info form after a non-@overload def, so only the
        # MediaPoolItem form type-checks; the README documents this list-of-dicts form.
        placed = media_pool.AppendToTimeline([placement])  # type: ignore[arg-type]
        if not placed:
            raise combcn_host.HostError(
                f"imported {clip.GetName()} but Resolve did not place it on track {track}"
            )
        say(f"placed on video track {track} at record frame {placement['recordFrame']}")
    return Outcome(request, clip, track)


def connect(script_globals: dict[str, Any] | None = None) -> Resolve:
    """The running Resolve: the script's predefined ``resolve``/``bmd``, else DaVinciResolveScript."""
    script_globals = script_globals or {}
    app = script_globals.get("resolve")
    if app is None and script_globals.get("bmd") is not None:
        app = script_globals["bmd"].scriptapp("Resolve")
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
    return app  # type: ignore[no-any-return]


def launch(script_globals: dict[str, Any] | None = None, executable: str | None = None) -> int:
    """Entry point of the installed menu script. Returns 0 on success, 1 on a reported failure."""
    if executable:
        combcn_host.set_installed_executable(executable)
    try:
        outcome = inpaint_current_clip(connect(script_globals), load_options())
    except combcn_host.HostError as exc:
        say(f"error: {exc}")
        return 1
    say(f"done: {outcome.imported.GetName()}")
    return 0


if __name__ == "__main__":
    sys.exit(launch(globals()))
