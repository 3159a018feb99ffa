"""The "CombCN Inpaint" node for Nuke: a Group that runs ``combcn inpaint`` and reads the result back.

The node (Nodes menu > CombCN > CombCN Inpaint) has a Source, a Matte and an optional Reference input
and these knobs: first/last frame, matte channel, invert, expand, feather, shaper, device, weights,
track camera, reference frame, output and a Render button. Render:

1. asks the engine which frames it will read for the frame range (temporal windows reach beyond
   it) and finds them: an upstream Read of an EXR/DPX sequence is used as it is (or, when its frame
   offset moves frames or its trimmed range hides frames on disk such as a slate, through links to
   exactly those files, looked for through Dots, NoOps and disabled nodes); anything else is first
   rendered (main thread, an internal Crop to the format, a Write and ``nuke.execute``) to a
   temporary EXR sequence beside the output, for exactly those frames and only the channels the
   engine reads (rgb, and the matte's channel). A connected Reference input (the plate with the hole
   painted clean, e.g. through a RotoPaint) is always rendered, for its one frame (the reference
   frame knob), in the colour the engine reads the plate in, and passed as ``--reference N=file``;
2. runs ``combcn inpaint ... --progress json`` in a background thread with a ``nuke.ProgressTask``
   whose Cancel stops the engine process;
3. points the Group's internal Read at the written EXR sequence, in the colour space of what was
   written, reloads it, and switches the output to it.

Paths (output, weights) are the knobs' evaluated values: TCL expressions and ``$env(NAME)`` are
expanded, and a relative path is taken from the project directory (Project Settings), as Nuke does.

Refused with one line: proxy mode (the engine needs full-resolution frames), and a script with
several views where an input differs per view (``%V`` files or a node to pre-render).

No inpainting happens in Nuke's process: the engine is the ``combcn`` program (see combcn_host).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import sys
import threading
from dataclasses import dataclass, field

import nuke

_COMMON = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "common")
if os.path.isdir(_COMMON) and os.path.abspath(_COMMON) not in sys.path:
    sys.path.insert(0, os.path.abspath(_COMMON))

import combcn_host  # noqa: E402  (found through the path set just above)

NODE_CLASS_LABEL = "CombCN Inpaint"
MATTE_CHANNELS = {"alpha": "A", "red": "R", "green": "G", "blue": "B"}
SHAPERS = ["auto", "acescct", "log", "none", "srgb"]
DEVICES = ["auto", "cpu", "cuda"]
DIRECT_EXTENSIONS = (".exr", ".dpx")  # what the engine reads with the same pixel values as Nuke's Read
UPSTREAM_FOLDER = ".combcn-upstream"
# Nodes whose output is their input 0: the Read behind them is used as it is (no pre-render).
PASS_THROUGH = ("Dot", "NoOp")
# Channels a pre-render writes: the plate's colour, and only the channel that carries the matte.
MATTE_RENDER_CHANNELS = {"alpha": "alpha", "red": "rgb", "green": "rgb", "blue": "rgb"}
# Root knobs that say what a Read's "default" colour space is, by file type (Project Settings > Color).
DEFAULT_LUT_KNOBS = {".exr": "floatLut", ".dpx": "logLut"}
_HASHES = re.compile(r"#+")
_PRINTF = re.compile(r"%0?(\d*)d")
_VIEW = re.compile(r"%[Vv]")
_FRAME_TOKEN = re.compile(r"#+|%0?\d*d")

# Engine runs in flight, by node full name: a second Render on the same node is refused.
_jobs: dict[str, combcn_host.EngineProcess | None] = {}
_jobs_lock = threading.Lock()


@atexit.register
def stop_running() -> None:
    """End every engine a Render started that is still running, when Nuke's Python exits (the render
    threads are daemons: without this, quitting Nuke mid-render would leave the engine running)."""
    with _jobs_lock:
        running = [proc for proc in _jobs.values() if proc is not None]
    for proc in running:
        proc.cancel(grace_s=1.0)


def set_installed_executable(path: str) -> None:
    """Called from the block install/install-nuke.sh writes into ~/.nuke/init.py."""
    combcn_host.set_installed_executable(path)


def add_menu() -> None:
    """Add Nodes > CombCN > CombCN Inpaint (menu.py calls this; GUI sessions only)."""
    menu = nuke.menu("Nodes").addMenu("CombCN")
    menu.addCommand(NODE_CLASS_LABEL, "import combcn_nuke; combcn_nuke.create_node()")


def _add(node: nuke.Node, knob: nuke.Knob, tooltip: str) -> None:
    knob.setTooltip(tooltip)
    node.addKnob(knob)


def create_node() -> nuke.Group:
    """Create a CombCN Inpaint Group (connected to the selection, as any new node) and return it."""
    node = nuke.createNode("Group", inpanel=False)
    if not isinstance(node, nuke.Group):
        raise TypeError(f"nuke.createNode('Group') gave a {type(node).__name__}")
    group = node
    group.setName("CombCNInpaint")
    with group:
        for default in group.nodes():  # a Group made like the toolbar's may hold Input1 -> Output1
            nuke.delete(default)
        source = nuke.nodes.Input(name="Source")  # created first: input 0
        matte = nuke.nodes.Input(name="Matte")  # input 1
        reference = nuke.nodes.Input(name="Reference")  # input 2 (optional)
        result = nuke.nodes.Read(name="Result")  # the written EXRs, read back at full resolution
        switch = nuke.nodes.Switch(name="ShowResult")
        switch.setInput(0, source)
        switch.setInput(1, result)
        switch["which"].setValue(0)
        output = nuke.nodes.Output(name="Output")
        output.setInput(0, switch)
        matte.setXYpos(source.xpos() + 150, source.ypos())
        reference.setXYpos(source.xpos() + 300, source.ypos())

    root = nuke.root()
    _add(group, nuke.Tab_Knob("combcn", "CombCN"), "")
    first = nuke.Int_Knob("first", "frame range")
    first.setValue(root.firstFrame())
    _add(
        group,
        first,
        "first frame to write; the engine also reads frames around the range for temporal context "
        "(a Read's frames on disk, or as many as it needs of any other input, which is pre-rendered)",
    )
    last = nuke.Int_Knob("last", "")
    last.setValue(root.lastFrame())
    last.clearFlag(nuke.STARTLINE)
    _add(group, last, "last frame to write")
    from_input = nuke.PyScript_Knob(
        "range_from_input", "from input", "import combcn_nuke; combcn_nuke.range_from_input(nuke.thisNode())"
    )
    from_input.clearFlag(nuke.STARTLINE)
    _add(group, from_input, "set the frame range to the Source input's range")
    _add(
        group,
        nuke.Enumeration_Knob("matte_channel", "matte channel", list(MATTE_CHANNELS)),
        "channel of the Matte input that marks what to remove (1 = remove); without a Matte input "
        "the Source's alpha is used",
    )
    invert = nuke.Boolean_Knob("invert", "invert")
    invert.clearFlag(nuke.STARTLINE)
    _add(group, invert, "invert the matte (for mattes where 1 = keep)")
    _add(group, nuke.Int_Knob("expand", "expand"), "grow the hole by this many pixels (negative erodes)")
    _add(group, nuke.Double_Knob("feather", "feather"), "soft edge of this many pixels outside the hole")
    _add(
        group,
        nuke.Enumeration_Knob("shaper", "shaper", SHAPERS),
        "colour shaper into the network's range: auto = acescct for float plates",
    )
    _add(group, nuke.Enumeration_Knob("device", "device", DEVICES), "auto = cuda when present, else cpu")
    _add(group, nuke.File_Knob("weights", "weights"), "weights file (empty = the shipped weights)")
    track = nuke.Boolean_Knob("track", "track camera")
    track.setValue(True)
    _add(
        group,
        track,
        "build the clean plate through a track of the camera (off: the locked-off plate, for a shot "
        "where the track goes wrong)",
    )
    reference_frame = nuke.Int_Knob("reference_frame", "reference frame")
    reference_frame.setValue(root.firstFrame())
    _add(
        group,
        reference_frame,
        "the frame the Reference input shows clean (the plate's frame with the hole painted, e.g. "
        "with RotoPaint, or a clean plate placed at this frame); its pixels inside the hole are carried "
        "along the motion through the shot. Unused while the Reference input is not connected",
    )
    current = nuke.PyScript_Knob(
        "reference_from_current",
        "current frame",
        "import combcn_nuke; combcn_nuke.reference_from_current(nuke.thisNode())",
    )
    current.clearFlag(nuke.STARTLINE)
    _add(group, current, "set the reference frame to the timeline's current frame")
    _add(
        group,
        nuke.File_Knob("output", "output"),
        "EXR sequence to write, e.g. /shots/sh010/clean/plate.####.exr (empty = beside the Nuke script)",
    )
    _add(
        group,
        nuke.PyScript_Knob("render", "Render", "import combcn_nuke; combcn_nuke.render(nuke.thisNode())"),
        "run combcn inpaint in the background and read the result back",
    )
    _add(group, nuke.Text_Knob("status", "", "not rendered"), "")
    return group


def evaluated(knob: nuke.Knob) -> str:
    """The text of a file knob as Nuke opens it, frame tokens kept: TCL expressions (``[value
    root.name]``) and ``$env(NAME)`` expanded (Nuke ref, EvalString_Knob.evaluate), ``####``/``%04d``
    left as they are (in the ``%04d`` form).

    ``evaluate()`` on a file knob also puts the current frame's number in place of the frame tokens
    (Nuke ref, nuke.evaluateString: STRING_EXPAND_FILENUMBER), which would make a sequence one file.
    So the tokens are swapped for words no expansion touches while the knob is evaluated, then put
    back, and the knob's own text restored (undo off meanwhile), as production submitters do.
    """
    if not isinstance(knob, nuke.EvalString_Knob):
        return str(knob.value() or "")
    text = str(knob.getText() or "")
    tokens = _FRAME_TOKEN.findall(text)
    if not tokens:
        return str(knob.evaluate() or "")
    marks = [f"COMBCNFRAMETOKEN{i}X" for i in range(len(tokens))]
    pieces = _FRAME_TOKEN.split(text)  # one more piece than tokens (no zip(strict=) on Python 3.7 hosts)
    protected = pieces[0] + "".join(marks[i] + pieces[i + 1] for i in range(len(tokens)))
    undo = getattr(nuke, "Undo", None)
    if undo is not None:
        undo.disable()
    try:
        knob.setValue(protected)
        try:
            value = str(knob.evaluate() or "")
        finally:
            knob.setValue(text)
    finally:
        if undo is not None:
            undo.enable()
    for i, token in enumerate(tokens):
        value = value.replace(marks[i], token, 1)
    return value


def knob_path(node: nuke.Node, name: str) -> str:
    """The path a file knob names, as Nuke would open it (:func:`evaluated`: expressions and
    ``$env(NAME)`` expanded, frame tokens kept), a relative path taken from the project directory
    (Project Settings > project directory) when one is set. Empty when unset."""
    text = evaluated(node[name]).strip()
    if not text or os.path.isabs(text):
        return text
    project = nuke.root().knob("project_directory")
    if project is not None:
        folder = evaluated(project).strip()
        if folder:
            return os.path.join(folder, text)
    return text


def range_from_input(node: nuke.Node) -> None:
    """Set first/last from the Source input's frame range."""
    upstream = node.input(0)
    if upstream is None:
        nuke.message("CombCN: connect a plate to the Source input first.")
        return
    node["first"].setValue(upstream.firstFrame())
    node["last"].setValue(upstream.lastFrame())


def reference_from_current(node: nuke.Node) -> None:
    """Set the reference frame to the current frame (the frame painted is usually the one shown)."""
    node["reference_frame"].setValue(nuke.frame())


def printf_pattern(path: str) -> str:
    """``plate.####.exr`` -> ``plate.%04d.exr``; printf patterns unchanged."""
    return _HASHES.sub(lambda m: "%0" + str(len(m.group(0))) + "d", path)


def frame_path(pattern: str, frame: int) -> str:
    """The file of ``frame`` in a ``%04d``/``####`` pattern."""
    return _PRINTF.sub(lambda m: str(frame).zfill(int(m.group(1) or 0)), printf_pattern(pattern), count=1)


def frames_on_disk(pattern: str) -> list[int]:
    """Frame numbers of the files in the pattern's folder that match it (sorted)."""
    pattern = printf_pattern(pattern)
    folder, name = os.path.split(pattern)
    token = _PRINTF.search(name)
    if token is None:
        return []
    width = int(token.group(1) or 1)
    regex = re.compile(
        re.escape(name[: token.start()])
        + r"(-?\d{"
        + str(width)
        + ",})"
        + re.escape(name[token.end() :])
        + "$"
    )
    try:
        names = os.listdir(folder or ".")
    except OSError:
        return []
    return sorted({int(m.group(1)) for m in map(regex.match, names) if m})


@dataclass(frozen=True)
class ReadSequence:
    """A Read of an EXR/DPX sequence the engine can read itself.

    Attributes:
        node: the Read's name (for messages).
        pattern: full-resolution file pattern (``%04d`` form).
        offset: Nuke frame = file frame + offset (the Read's "start at" or "offset" frame mode).
        first, last: the Read's trimmed range, in file frames (frames outside it are not the clip).
    """

    node: str
    pattern: str
    offset: int
    first: int
    last: int

    def nuke_frames(self) -> list[int]:
        """The Nuke frames the Read shows from files."""
        return list(range(self.first + self.offset, self.last + self.offset + 1))

    def file(self, nuke_frame: int) -> str:
        return frame_path(self.pattern, nuke_frame - self.offset)


def _knob_text(node: nuke.Node, name: str) -> str:
    knob = node.knob(name)
    return "" if knob is None else str(knob.value()).strip()


def _disabled(node: nuke.Node) -> bool:
    knob = node.knob("disable")
    return knob is not None and bool(knob.value())


def upstream_read(node: nuke.Node) -> nuke.Node:
    """The node whose pixels ``node`` shows: through Dots, NoOps and disabled nodes (each passes its
    input 0 on unchanged) to the first node that changes the image, usually the Read."""
    seen = {id(node)}
    while node.Class() in PASS_THROUGH or (node.Class() != "Read" and _disabled(node)):
        above = node.input(0)
        if above is None or id(above) in seen:
            break
        seen.add(id(above))
        node = above
    return node


def read_sequence(node: nuke.Node) -> ReadSequence | None:
    """The sequence of a plain Read of EXR/DPX files, else None (the input is pre-rendered)."""
    if node.Class() != "Read" or _disabled(node):  # a disabled Read shows black, not its files
        return None
    path = nuke.filename(node)  # proxy mode is refused before this, so this is the full-resolution file
    if (
        not path
        or not path.lower().endswith(DIRECT_EXTENSIONS)
        or _PRINTF.search(printf_pattern(path)) is None
    ):
        return None
    first, last = int(node["first"].value()), int(node["last"].value())
    mode, frame = _knob_text(node, "frame_mode"), _knob_text(node, "frame")
    if mode == "start at":  # the trimmed first file frame is shown at frame `frame`
        offset = int(float(frame or first)) - first
    elif mode == "offset":
        offset = int(float(frame or 0))
    elif frame in ("", "frame"):
        offset = 0
    else:
        return None  # a frame expression: Nuke's own render is the only faithful reading
    return ReadSequence(node.name(), printf_pattern(path), offset, first, last)


def _views_in(node: nuke.Node) -> bool:
    """True when the node reads one file per view (``%V``/``%v`` in its path)."""
    return node.Class() == "Read" and bool(_VIEW.search(_knob_text(node, "file")))


@dataclass
class Plan:
    """What Render does before the engine runs (main thread), and what the Result Read gets.

    Attributes:
        request: the engine run.
        read_knobs: knob values for the Result Read (colour space of what was written).
        temp: folder of links and pre-rendered frames, removed after the run (None = none needed).
        links: (Read sequence, pattern) to fill with links to the frames read.
        renders: (input name, channels, pattern) to pre-render for the frames read.
        read: the frames the engine reads (Nuke frame numbers).
        reference: (frame, pattern, Write colour knobs) of the Reference input's one frame to
            pre-render, or None.
    """

    request: combcn_host.InpaintRequest
    read_knobs: dict[str, object]
    temp: str | None = None
    links: list[tuple[ReadSequence, str]] = field(default_factory=list)
    renders: list[tuple[str, str, str]] = field(default_factory=list)
    read: list[int] = field(default_factory=list)
    reference: tuple[int, str, dict[str, object]] | None = None


def _render_upstream(
    group: nuke.Group,
    input_name: str,
    channels: str,
    pattern: str,
    frames: list[int],
    colour: dict[str, object] | None = None,
) -> None:
    """Render the group's input ``input_name`` for ``frames`` (a run) to ``pattern`` (main thread).

    A Crop to the input's format comes first: the EXR Write stores each frame's bounding box as its
    data window, and the engine refuses a plate whose frames' data windows differ (a moving bbox).
    ``colour`` are Write knobs (raw, colorspace) for files that must hold the values a plate Read's
    files hold; None = raw (working-space values).
    """
    with group:
        node_input = group.node(input_name)
        crop = nuke.nodes.Crop(name="CombCNCrop" + input_name)
        write = nuke.nodes.Write(name="CombCNUpstream" + input_name)
        try:
            size = node_input.format() if node_input is not None else nuke.root().format()
            crop.setInput(0, node_input)
            crop["box"].setValue([0, 0, size.width(), size.height()])
            crop["reformat"].setValue(True)  # the format is the box: nothing outside it is written
            crop["intersect"].setValue(False)  # the bbox is the box, also where the input's is smaller
            crop["crop"].setValue(True)  # black outside, not the edge pixels repeated
            write.setInput(0, crop)
            write["file"].setValue(pattern)
            write["file_type"].setValue("exr")
            write["channels"].setValue(channels)
            write["datatype"].setValue("32 bit float")
            write["raw"].setValue(True)  # working-space values, as the Result Read reads them back (raw)
            for name, value in (colour or {}).items():  # or the plate's file values (its colour space)
                write[name].setValue(value)
            nuke.execute(write, frames[0], frames[-1], 1, views=nuke.views()[:1])
        finally:
            nuke.delete(write)
            nuke.delete(crop)


def _link_frames(sequence: ReadSequence, frames: list[int], pattern: str) -> None:
    """Make ``pattern`` hold exactly ``frames`` (Nuke numbers) as links to the Read's files."""
    for frame in frames:
        source, link = sequence.file(frame), frame_path(pattern, frame)
        if not os.path.isfile(source):
            raise combcn_host.HostError(
                f"{sequence.node}: {source} (frame {frame}) is missing; "
                "render or copy it, or narrow the range"
            )
        try:
            os.symlink(os.path.abspath(source), link)
        except OSError:  # no symlink right (Windows without developer mode): a hard link, else a copy
            try:
                os.link(source, link)
            except OSError:
                shutil.copyfile(source, link)


def _default_output(node: nuke.Node) -> str:
    script = nuke.root().name()
    if not script or script == "Root":
        raise combcn_host.HostError(
            "set the output knob (the Nuke script is unsaved, so there is no default)"
        )
    folder = os.path.join(os.path.dirname(os.path.abspath(script)), "combcn", node.name())
    return os.path.join(folder, node.name() + ".####.exr")


def _colour_of(node: nuke.Node, sequence: ReadSequence) -> dict[str, object]:
    """Result Read knobs that read our EXR (the plate's file values) as the plate Read reads its files."""
    if node.knob("raw") is not None and bool(node["raw"].value()):
        return {"raw": True}
    value = _knob_text(node, "colorspace")
    match = re.match(r"^default\s*\((.+)\)$", value)
    if match:  # Nuke shows the default it resolved for the plate's file type, e.g. "default (Cineon)"
        return {"raw": False, "colorspace": match.group(1).strip()}
    if value not in ("", "default"):
        return {"raw": False, "colorspace": value}
    lut = nuke.root().knob(DEFAULT_LUT_KNOBS[os.path.splitext(sequence.pattern)[1].lower()])
    if lut is None or not str(lut.value()).strip():
        raise combcn_host.HostError(
            f"{sequence.node}: cannot tell which colour space its 'default' is; choose one on the Read"
        )
    return {"raw": False, "colorspace": str(lut.value()).strip()}


def _check_proxy() -> None:
    """Refuse proxy mode: filenames and Writes would give proxy-size frames (one line)."""
    proxy = nuke.root().knob("proxy")
    if proxy is not None and bool(proxy.value()):
        raise combcn_host.HostError(
            "proxy mode is on: turn it off (the engine needs full-resolution frames) and render again"
        )


def _check_views(inputs: list[nuke.Node], direct: list[ReadSequence | None]) -> None:
    """Refuse a multi-view script where an input may differ per view (one line)."""
    views = nuke.views()
    if len(views) > 1:
        per_view = [n.name() for i, n in enumerate(inputs) if direct[i] is None or _views_in(n)]
        if per_view:
            raise combcn_host.HostError(
                f"this script has views {', '.join(views)} and {', '.join(per_view)} may differ per view; "
                "CombCN renders one view: render it in a single-view script, or feed Reads of one view"
            )


class _Asker:
    """Asks the engine which frames a render reads, under a progress task the artist can cancel.

    The answer comes from the engine's own Python (it imports torch: seconds), so it runs in a
    thread while this (main) thread keeps a ``nuke.ProgressTask`` showing and polls its Cancel; a
    cancel ends the query's process (combcn_host.frames_read) before Render reports it.
    """

    def __init__(
        self, key: str, targets: list[int], weights: str | None, references: list[int] | None = None
    ) -> None:
        self.key = key
        self.targets = targets
        self.weights = weights
        self.references = references or []

    def frames_read(self, frames: list[int], settle: bool = False) -> list[int]:
        answer: dict[str, object] = {}
        cancel = threading.Event()

        def ask() -> None:
            try:
                answer["frames"] = combcn_host.frames_read(
                    frames,
                    self.targets,
                    self.weights,
                    settle=settle,
                    should_cancel=cancel.is_set,
                    references=self.references,
                )
            except Exception as exc:  # handed to the main thread, which reports it
                answer["error"] = exc

        task = nuke.ProgressTask(f"CombCN Inpaint {self.key}")
        task.setMessage("asking combcn which frames it reads (the engine starts: a few seconds)")
        worker = threading.Thread(target=ask, name=f"combcn frames {self.key}", daemon=True)
        worker.start()
        percent = 0
        while worker.is_alive():
            worker.join(0.1)
            if task.isCancelled():
                cancel.set()  # the worker ends the query's process (SIGKILL after a grace of 1 s)
                worker.join(5.0)
                raise combcn_host.Cancelled("cancelled while asking combcn which frames it reads")
            percent = min(percent + 1, 95)
            task.setProgress(percent)
        task.setProgress(100)
        error = answer.get("error")
        if isinstance(error, Exception):
            raise error
        found = answer["frames"]
        assert isinstance(found, list)
        return found


def _check_reference_frame(
    frame: int, source: nuke.Node, plate: ReadSequence | None, targets: list[int]
) -> None:
    """Refuse (one line) a reference frame the plate the engine reads does not have: outside the
    Source's frames (a pre-rendered input: its range and the frame range), or missing on disk."""
    if plate is None:
        lo, hi = min(source.firstFrame(), targets[0]), max(source.lastFrame(), targets[-1])
        where = f"the Source input's frames {lo}-{hi}"
    else:
        shown = plate.nuke_frames()
        lo, hi = shown[0], shown[-1]
        where = f"{plate.node}'s frames {lo}-{hi}"
    if not lo <= frame <= hi:
        raise combcn_host.HostError(
            f"the reference frame {frame} is outside {where}; set the reference frame knob to the frame "
            "the Reference input shows clean"
        )
    if plate is not None and frame - plate.offset not in set(frames_on_disk(plate.pattern)):
        raise combcn_host.HostError(
            f"{plate.node}: {plate.file(frame)} (the reference frame {frame}) is missing; render or copy it, "
            "or choose another reference frame"
        )


def _plan_plate(
    plan: Plan,
    node: nuke.Node,
    read: nuke.Node,
    plate: ReadSequence | None,
    channels: str,
    asker: _Asker,
    temp: str,
) -> str:
    """How the plate reaches the engine (sets ``plan.read`` and the Result's colour); returns its pattern.

    ``node`` is the Source input, ``read`` the node it shows (through Dots), ``channels`` what a
    pre-render writes.
    """
    targets = asker.targets
    if plate is None:  # as many frames of the input as the engine reads for the range, pre-rendered
        upstream = range(min(node.firstFrame(), targets[0]), max(node.lastFrame(), targets[-1]) + 1)
        plan.read = asker.frames_read(list(upstream), settle=True)
        source = os.path.join(temp, "source.####.exr")
        plan.renders.append(("Source", channels, source))
        plan.read_knobs = {"raw": True}
        return source
    shown = plate.nuke_frames()
    outside = [f for f in targets if f not in set(shown)]
    if outside:
        raise combcn_host.HostError(
            f"frames {outside[0]}-{outside[-1]} are outside {plate.node}'s frames "
            f"{shown[0]}-{shown[-1]}; narrow the frame range"
        )
    on_disk = frames_on_disk(plate.pattern)
    absent = [f for f in targets if f - plate.offset not in set(on_disk)]
    if absent:
        raise combcn_host.HostError(
            f"{plate.node}: {plate.file(absent[0])} (frame {absent[0]}) is missing; render or copy it, "
            "or narrow the frame range"
        )
    plan.read_knobs = _colour_of(read, plate)
    if plate.offset == 0 and set(on_disk) <= set(range(plate.first, plate.last + 1)):
        plan.read = on_disk  # at most; narrowed only where it matters (a matte shorter than it)
        return plate.pattern  # as it is: the engine sees the Read's frames and no others
    # Links to exactly the frames read: nothing outside the trim (a slate), in Nuke's numbers.
    trimmed = [f + plate.offset for f in on_disk if plate.first <= f <= plate.last]
    plan.read = asker.frames_read(trimmed, settle=True)
    source = os.path.join(temp, "source.%04d" + os.path.splitext(plate.pattern)[1])
    plan.links.append((plate, source))
    return source


def _plan_matte(
    plan: Plan,
    matte: ReadSequence | None,
    plate_as_is: bool,
    channels: str,
    asker: _Asker,
    temp: str,
) -> str:
    """How the matte reaches the engine: it must hold every frame in ``plan.read``; returns its pattern."""

    def covered() -> bool:
        return matte is not None and set(plan.read) <= set(matte.nuke_frames())

    if not covered() and plate_as_is:  # narrow "every frame on disk" to what is read (asking takes seconds)
        plan.read = asker.frames_read(plan.read)
    if matte is None or not covered():  # exactly the frames the engine reads from the plate
        pattern = os.path.join(temp, "matte.####.exr")
        plan.renders.append(("Matte", channels, pattern))
        return pattern
    if matte.offset == 0:
        return matte.pattern
    pattern = os.path.join(temp, "matte.%04d" + os.path.splitext(matte.pattern)[1])
    plan.links.append((matte, pattern))
    return pattern


def _prepare(group: nuke.Group) -> Plan:
    """Main thread: read the knobs, decide how each input reaches the engine (as is, linked, rendered)."""
    first = int(group["first"].value())
    last = int(group["last"].value())
    if last < first:
        raise combcn_host.HostError(f"the frame range {first}-{last} is empty; set first <= last")
    output = knob_path(group, "output") or _default_output(group)
    if not output.lower().endswith(".exr"):
        raise combcn_host.HostError(f"the output must be an EXR sequence (…/name.####.exr), not {output}")
    source_node = group.input(0)
    if source_node is None:
        raise combcn_host.HostError("connect a plate to the Source input")
    matte_node = group.input(1)
    reference_node = group.input(2)
    inputs = [source_node] + ([matte_node] if matte_node is not None else [])
    _check_proxy()  # first: nuke.filename gives proxy files in proxy mode
    reads = [upstream_read(node) for node in inputs]
    direct = [read_sequence(node) for node in reads]
    painted = [upstream_read(reference_node)] if reference_node is not None else []
    _check_views(reads + painted, direct + [None for _ in painted])  # the reference is always rendered
    targets = list(range(first, last + 1))
    reference_frame: int | None = None
    if reference_node is not None:
        reference_frame = int(group["reference_frame"].value())
        _check_reference_frame(reference_frame, source_node, direct[0], targets)
    weights = knob_path(group, "weights") or None
    references = [reference_frame] if reference_frame is not None else []
    asker = _Asker(group.fullName(), targets, weights, references)
    temp = os.path.join(os.path.dirname(os.path.abspath(output)), UPSTREAM_FOLDER, group.name())
    plan = Plan(combcn_host.InpaintRequest(source="", output=output, first=first, last=last), {})
    matte_choice = str(group["matte_channel"].value())

    plate_channels = "rgb" if matte_node is not None else "rgba"  # no Matte input: the alpha is the matte
    source = _plan_plate(plan, source_node, reads[0], direct[0], plate_channels, asker, temp)
    as_is = direct[0] is not None and source == direct[0].pattern
    matte = None
    if matte_node is not None:
        channels = MATTE_RENDER_CHANNELS[matte_choice]
        matte = _plan_matte(plan, direct[1], as_is, channels, asker, temp)

    reference: tuple[tuple[int, str], ...] = ()
    if reference_frame is not None:  # one frame, in the colour the engine reads the plate in
        pattern = os.path.join(temp, "reference.####.exr")
        plan.reference = (reference_frame, pattern, dict(plan.read_knobs))
        reference = ((reference_frame, frame_path(pattern, reference_frame)),)

    def choice(name: str) -> str | None:
        value = str(group[name].value())
        return None if value == "auto" else value

    plan.request = combcn_host.InpaintRequest(
        source=source,
        output=output,
        first=first,
        last=last,
        matte=matte,
        matte_channel=MATTE_CHANNELS[matte_choice] if matte else None,
        invert=bool(group["invert"].value()),
        expand=int(group["expand"].value()),
        feather=float(group["feather"].value()),
        shaper=choice("shaper"),
        device=choice("device"),
        weights=weights,
        track=bool(group["track"].value()),
        overwrite=True,  # Render means render again; the engine still refuses to overwrite its input
        references=reference,
    )
    if plan.links or plan.renders or plan.reference:
        plan.temp = temp
        _materialise(group, plan)
    return plan


def _materialise(group: nuke.Group, plan: Plan) -> None:
    """Write the temporary inputs: links, then pre-renders; a failure or cancel leaves nothing behind."""
    assert plan.temp is not None
    shutil.rmtree(plan.temp, ignore_errors=True)  # frames of an earlier, interrupted run
    try:
        os.makedirs(plan.temp)
        for sequence, pattern in plan.links:
            _link_frames(sequence, plan.read, pattern)
        for input_name, channels, pattern in plan.renders:
            _render_upstream(group, input_name, channels, pattern, plan.read)
        if plan.reference is not None:
            frame, pattern, colour = plan.reference
            _render_upstream(group, "Reference", "rgb", pattern, [frame], colour)
    except BaseException:
        _remove_temp(plan.temp)
        raise


def describe(exc: BaseException) -> str:
    """One line for the artist: what went wrong, with the file for an operating-system error."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot write or link{where}: {exc.strerror}"
    text = " ".join(str(exc).split())
    if isinstance(exc, (combcn_host.HostError, RuntimeError)):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def render(node: nuke.Node) -> threading.Thread | None:
    """The Render button: prepare in the main thread, then run the engine in a background thread.

    Returns the worker thread (None when nothing was started); every failure becomes one line in a
    ``nuke.message`` and leaves the node free to render again.
    """
    if not isinstance(node, nuke.Group):
        nuke.message("CombCN: Render works on a CombCN Inpaint group.")
        return None
    key = node.fullName()
    with _jobs_lock:
        if key in _jobs:
            nuke.message(f"CombCN: {key} is already rendering; cancel it in the progress panel first.")
            return None
        _jobs[key] = None
    plan: Plan | None = None
    worker: threading.Thread | None = None
    try:
        executable = combcn_host.find_executable()  # before any pre-render: fail fast
        plan = _prepare(node)
        proc = combcn_host.EngineProcess(plan.request, executable)
        node["status"].setValue(f"rendering {plan.request.first}-{plan.request.last} ...")
        thread = threading.Thread(target=_run, args=(key, proc, plan), name=f"combcn {key}", daemon=True)
        thread.start()
        worker = thread  # from here on the thread owns the job entry and the temporary frames
    except Exception as exc:  # a nuke.execute cancel is a RuntimeError; a full disk an OSError
        nuke.message(f"CombCN: {describe(exc)}")
    finally:
        if worker is None:
            if plan is not None and plan.temp is not None:
                _remove_temp(plan.temp)
            with _jobs_lock:
                _jobs.pop(key, None)
    return worker


def _run(key: str, proc: combcn_host.EngineProcess, plan: Plan) -> None:
    """Background thread: run the engine under a ProgressTask; report back in the main thread.

    The task's panel closes when this function returns and the task is released.
    """
    request = proc.request
    task = nuke.ProgressTask(f"CombCN Inpaint {key}")
    task.setMessage(f"starting combcn for frames {request.first}-{request.last}")

    def progress(p: combcn_host.Progress) -> None:
        task.setProgress(p.percent)
        task.setMessage(f"frame {p.frame} ({p.done}/{p.total})")

    try:
        with _jobs_lock:
            _jobs[key] = proc
        proc.start()
        result = proc.wait(on_progress=progress, should_cancel=task.isCancelled)
    except combcn_host.Cancelled as exc:
        nuke.executeInMainThread(_set_status, args=(key, f"cancelled: {exc}"))
    except Exception as exc:  # the engine's own error, or anything else: one line, never a stuck job
        nuke.executeInMainThread(_set_status, args=(key, f"failed: {describe(exc)}"))
        nuke.executeInMainThread(nuke.message, args=(f"CombCN Inpaint {key} failed:\n{describe(exc)}",))
    else:
        nuke.executeInMainThread(_load_result, args=(key, request, plan.read_knobs, result.written))
    finally:
        proc.cancel()  # a no-op once the engine has exited; stops it if this thread failed mid-run
        if plan.temp is not None:
            _remove_temp(plan.temp)
        with _jobs_lock:
            _jobs.pop(key, None)


def _remove_temp(temp: str) -> None:
    """Delete the pre-rendered inputs, and their parent folder if no other node uses it."""
    shutil.rmtree(temp, ignore_errors=True)
    parent = os.path.dirname(temp)
    if os.path.isdir(parent) and not os.listdir(parent):
        os.rmdir(parent)


def _set_status(key: str, text: str) -> None:
    node = nuke.toNode(key)
    if node is not None:
        node["status"].setValue(text)


def _load_result(
    key: str, request: combcn_host.InpaintRequest, read_knobs: dict[str, object], written: int
) -> None:
    """Main thread: point the internal Read at the written sequence, reload it and show it.

    The output is only switched to the Result once every knob took; otherwise the status and a
    message say where the frames are and what to do.
    """
    node = nuke.toNode(key)
    if not isinstance(node, nuke.Group):
        return  # deleted while rendering
    read = node.node("Result")
    switch = node.node("ShowResult")
    output = request.output
    if read is None or switch is None:
        nuke.message(f"CombCN: {key} lost its internal Result/ShowResult nodes; the frames are in {output}")
        return
    path = output.replace(os.sep, "/")
    values: list[tuple[str, object]] = [(name, request.first) for name in ("first", "origfirst")]
    values += [(name, request.last) for name in ("last", "origlast")]
    values += [("frame_mode", "expression"), ("frame", "")]  # our files carry the frame numbers we show
    values += list(read_knobs.items())
    name: str = "file"
    value: object = f"{path} {request.first}-{request.last}"
    try:
        file_knob = read["file"]
        if isinstance(file_knob, nuke.File_Knob):
            # Nuke ref, File_Knob.fromUserText: parses the frame range off the end and opens the file to
            # set the format (setValue leaves the Read's format as it was: another resolution's, or none).
            file_knob.fromUserText(str(value))
        else:
            file_knob.setValue(path)
        for name, value in values:
            knob = read.knob(name)
            if knob is not None or name in read_knobs:
                read[name].setValue(value)
                if name == "colorspace" and str(read[name].value()) != value:
                    raise ValueError(f"it reads {read[name].value()!r}")
    except Exception as exc:  # a knob Nuke refuses, or a file it cannot open: one line, never a traceback
        text = (
            f"rendered {written} frame(s) to {output}, but the Result read refused {name} {value!r} "
            f"({describe(exc)}); read them with a Read node set to the plate's colour space"
        )
        node["status"].setValue(f"failed: {text}")
        nuke.message(f"CombCN Inpaint {key}: {text}")
        return
    execute = getattr(read.knob("reload"), "execute", None)  # the Read's reload button
    if callable(execute):
        execute()  # same file names as the last render: drop Nuke's cached frames
    switch["which"].setValue(1)
    node["status"].setValue(f"rendered {written} frame(s) {request.first}-{request.last}")
